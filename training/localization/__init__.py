"""Where a target is in a query volume: templates (six extreme points, optionally a mask), registration of each
template to the query, the atlas's label fusion and verdict (found / partly outside / not found), MedLAM as the fast
preview; one ``localize.make_localizer`` for them all."""
