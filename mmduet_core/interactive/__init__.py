"""What a person plays with: the duet demo's playback and renderers (`demo`), the JupyterLab player (`widgets`)
and the policy explorer (`explorer`, drawn with the small SVG charts of `svg`). Import the widget modules only
where a kernel runs."""
