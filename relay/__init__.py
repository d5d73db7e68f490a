"""Marketplace mail relay: tokenizing SMTP gateway between buyers and sellers."""
