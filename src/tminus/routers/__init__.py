"""Traffic routers: one module per kind behind :class:`tminus.routers.base.Router`."""
