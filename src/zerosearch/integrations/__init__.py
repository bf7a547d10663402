"""zerosearch inside other RL engines (optional extras): each subpackage plugs zerosearch's protocol,
engines, curriculum and reward into one engine without forking it. Nothing here is imported by the
core package."""
