"""Scraping pod metric endpoints: the exposition parser (pure), TLS/auth client factory, scraper."""
