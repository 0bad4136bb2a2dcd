"""Widgets shared by the workspaces: the image view, QPainter plots, the seed field, painted icons."""
