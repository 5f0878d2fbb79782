"""Pre-flight: every check of a workspace before a run starts (checks.py), pool hygiene (hygiene.py).

It orchestrates analysis/, mining/, runners/ and synth/ on the workspace's data, so it sits above them and
below loop/ (which records the hygiene findings of a run) and the front door (api.py); workspace/ stays the
data layer and imports none of these."""
