"""Imports every built-in recommender so that the registry knows them."""

from vmshadow.refinement import add_allow, reprioritize, scoped_deny, temporary_exception

__all__ = ["add_allow", "reprioritize", "scoped_deny", "temporary_exception"]
