"""connector: keeps CRM statuses in step with a local, ordered model of stages."""

__version__ = "0.1.0"
