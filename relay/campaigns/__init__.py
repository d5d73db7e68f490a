"""Brand campaigns: a registered brand's email campaigns to its followers.

One campaign's path, module by module:

- ``catalog``: brands, followers, products, promotions and shopping events, and
  what a promotion's status change does to the campaigns that show it;
- ``lifecycle``: a campaign from draft through review (``status`` records
  every change);
- ``rules``: the marketplace's rules on dates, promotions, the delivery window
  and the 7-day frequency, in one place;
- ``calendar``: the date picker's data;
- ``dispatch``: in ``relay serve``, starts approved campaigns on their date and
  hands each follower's message to the outbound queue at its time, enforcing
  the 7-day rule as it sends;
- ``render``: the message (HTML and plain text) from its templates;
- ``unsubscribe``: the one-click unsubscribe endpoint;
- ``report``: what became of each campaign's messages.
"""
