"""The stores' async operations: the single source of ``isr.adapters._sync``."""
