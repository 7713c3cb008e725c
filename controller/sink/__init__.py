"""The prediction sink (``rollwise prediction-sink``): KServe payload-logger CloudEvents in,
per-revision prediction histograms out, for the drift checks (docs/prediction-sink.md).

``events`` (pure: the CloudEvents; ``bodies``: the predictions in a response body),
``revisions`` (pod -> revision from the API server), ``histograms`` (bounded, exported),
``server`` (the HTTP receiver), ``settings`` (``ROLLWISE_SINK_*``), ``model_helper`` (the
same histogram from inside a KServe Python model).
"""
