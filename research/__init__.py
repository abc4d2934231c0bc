"""Backpropagation research codebase: pure-function models, manual vs automatic gradients."""
