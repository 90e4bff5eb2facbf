"""Four small stand-ins for UniBazzar's services, each really using its backends."""
