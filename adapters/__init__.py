"""Storage adapters for isr-runtime, behind one small interface (`adapters.base.Adapter`).

They store `isr` entries and a generation record and know nothing of windows or decorators.
"""

from .base import Adapter
from .memory import MemoryAdapter

__all__ = ["Adapter", "MemoryAdapter"]
