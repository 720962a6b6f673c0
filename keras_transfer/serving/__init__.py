"""``keras-transfer serve``: an export behind TF Serving's REST API.

================  =======================================================================
module            what it holds
================  =======================================================================
server            the aiohttp application: routes, version polling and swapping, the page
rest              TF Serving's REST request and response formats (rows, columns, b64)
request_batching  ``Batcher``: concurrent requests joined into one model call
page.html         the page a person tries the model on
================  =======================================================================
"""
