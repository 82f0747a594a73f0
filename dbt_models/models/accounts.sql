-- Accounts with the number and total lifetime value of their active users.
select
    a.account_id,
    a.name,
    a.domain,
    a.industry,
    a.created_at,
    count(u.user_id) as user_count,
    coalesce(sum(u.ltv), 0)::decimal(14, 2) as total_ltv
from {{ ref('raw_accounts') }} as a
left join {{ ref('raw_users') }} as u on u.account_id = a.account_id and u.is_active
group by a.account_id, a.name, a.domain, a.industry, a.created_at
