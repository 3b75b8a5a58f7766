"""The stores' sync operations, generated from ``isr.adapters._async``."""
