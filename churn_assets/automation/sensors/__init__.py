"""Sensors: the landing zone, drift reports and failed runs."""
