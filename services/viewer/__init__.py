"""The viewer service: watch the current policy or play in a browser; played
episodes become demonstrations in replay."""
