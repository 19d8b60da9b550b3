"""tether: research on remote machines over your own OpenSSH."""

__version__ = "0.1.0"
