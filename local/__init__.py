"""The embedded default: the whole of smsinvite on one machine, driven by template.yaml."""
