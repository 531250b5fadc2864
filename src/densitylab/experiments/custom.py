"""Experiments that are not "train these flows": filled in below."""

CUSTOM_STUDIES = ()
