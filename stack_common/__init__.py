"""Code shared by the stack's services: settings from the environment, errors, waiting, logging."""
