"""What a person plays with: the duet demo's playback and renderers (`demo`), the JupyterLab player (`widgets`)
and the policy explorer (`explorer`). Import the widget modules only where a kernel runs."""
