"""Storage adapters for isr-runtime, behind one small interface (`adapters.base.Adapter`).

They store `isr` entries and a generation record and know nothing of windows or decorators.
"""

import isr  # noqa: F401 - first: adapters.base needs isr's core, and isr needs adapters.base

from .base import Adapter
from .memory import MemoryAdapter

__all__ = ["Adapter", "MemoryAdapter"]
