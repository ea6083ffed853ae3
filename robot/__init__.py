"""Delivery robot: takes in paid orders, assigns card codes atomically, writes delivery back."""

from __future__ import annotations

__version__ = "0.1.0"
