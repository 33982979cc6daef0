"""Triage: the certified threshold, the bundle and the inspector's command."""
