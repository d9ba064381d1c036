"""Helpers shared by the test suites: real servers (Dovecot) and fakes; no tests here."""
