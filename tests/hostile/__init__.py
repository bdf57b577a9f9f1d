"""Generators of hostile and malformed inputs for the chaos suite (built at test time)."""
