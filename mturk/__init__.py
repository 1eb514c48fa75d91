"""Crowd backends: Amazon Mechanical Turk through boto3 (one client seam) and a local Turkle server;
the publishing ledger, costs, publish / status / collect / review / expire."""
