"""Who is calling: bearer tokens and the tokens file (tenants, their weights and quotas)."""
