"""Model commands: tiny-model, inspect, export."""

from __future__ import annotations
