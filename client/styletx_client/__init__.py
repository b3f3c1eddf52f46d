"""Typed Python client SDK for the styletx neural style transfer service."""
