"""Scaling algorithms (KPA, APA, HPA) as pure, clock-driven code: time is an argument."""
