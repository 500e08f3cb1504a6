"""Deployment backends: eager torch now; compiled backends plug in here."""
