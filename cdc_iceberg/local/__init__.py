"""The local development stack: servers run as plain processes on 127.0.0.1."""
