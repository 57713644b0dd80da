"""Keeping adaptations right over time: improve from feedback behind a gate, rebase onto another base
model, and watch served traffic for drift."""
