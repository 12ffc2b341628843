"""Ticket platform clients behind one protocol (see ``base``)."""
