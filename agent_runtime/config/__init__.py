"""Configuration: the YAML file (``model``), the checked pipeline built from it (``pipeline``,
``routing``, ``registry``), per-worker settings (``settings``) and config validation
(``validation``)."""
