"""Figure scripts: each reads run directories only and never trains."""
