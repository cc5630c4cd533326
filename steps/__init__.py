"""Step kinds, one folder each: its params schema, run/preview, its panel template and
the extra actions and worker jobs it offers. This app sits on top of rehearsals:
it imports the layers below, nothing imports it (kinds are found through
``runbooks.kinds.registry`` once this app has loaded)."""
