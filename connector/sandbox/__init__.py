"""Loopback stand-ins for the Salesforce and HubSpot APIs, for tests, benchmarks and `connector demo`."""
