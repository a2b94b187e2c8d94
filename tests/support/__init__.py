"""What the test suites share: the live server, real clients, fault proxies, fixtures of each
feature. One place, imported as tests.support.<name>."""
