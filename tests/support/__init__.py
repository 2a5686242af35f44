"""Helpers the tests share: data makers, fakes and runners (no tests live here)."""
