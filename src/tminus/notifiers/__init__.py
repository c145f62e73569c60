"""Notifier plug-ins: one module per channel kind behind :class:`base.Notifier`."""
