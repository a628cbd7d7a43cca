"""Imports every built-in recommender so that the registry knows them."""

from vmshadow.refinement import scoped_deny

__all__ = ["scoped_deny"]
