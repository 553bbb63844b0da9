"""The private web chat served by `localassist serve`: pages, accounts, conversations."""
