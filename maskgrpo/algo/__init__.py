"""The baseline's math (equations), context builders, losses and the round's update plan (registered by name in
``maskgrpo.catalog``)."""
