"""Placeholder: filled in below."""
def install():
    pass
