"""Participant services and the participant kit they are written with."""
