"""Tests of the serving API."""
