"""End-to-end tests of the dashboard in headless Chromium (see conftest.py for how they run)."""
