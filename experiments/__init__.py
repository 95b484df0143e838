"""Configs of real searches: each get_config() file names its run command and result."""
