"""The HTTP edge: the only package that imports Quart. Routes stay thin: they read and check the
request, call the domain modules, and pick a page, a fragment or a stream."""
