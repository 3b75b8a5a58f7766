"""The async driver: the single source the sync driver (``isr._sync``) is generated from."""
