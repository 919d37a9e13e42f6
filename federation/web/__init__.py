"""The thin Starlette layer: routes turn HTTP into calls on the broker and the provider.

``app.create_app`` builds the application; ``errors`` maps every error to a response in
one place; ``pages`` holds the login pages; ``cookies`` the cookie policy.
"""
