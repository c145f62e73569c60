"""Where commands run: the local machine now, SSH hosts later, behind one Host protocol."""
